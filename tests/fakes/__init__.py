"""Wire-level fakes of vendor services, driven through the vendors' real SDKs."""
