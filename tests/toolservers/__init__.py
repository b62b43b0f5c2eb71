"""Real MCP servers for the tests, written with the same SDK the agent uses."""
