"""Evidence: documents, revisions, extraction, passages."""
