from ari_agent.cli import main

raise SystemExit(main())
