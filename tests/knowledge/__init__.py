"""The knowledge base's sample document and its question set (issue 18)."""
