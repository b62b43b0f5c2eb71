"""The development stack behind `make up`: the bundled Asterisk (container or root filesystem) plus agents.

It works from a checkout only (it builds images and root filesystems from the
repository's asterisk/ and deploy/ folders) and does not ship in the wheel;
the runtime admin tools (doctor, call, test, calls, load) live in
``ari_agent.ops`` and work from an install.
"""
