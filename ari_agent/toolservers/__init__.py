"""Tools from MCP servers: one connection per server per agent process, only allowed tools offered."""

from ari_agent.toolservers.hub import RemoteTools, ToolHub, ToolServerError

__all__ = ["RemoteTools", "ToolHub", "ToolServerError"]
