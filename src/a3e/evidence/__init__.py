"""Evidence: documents, revisions, their storage, extraction and search."""
