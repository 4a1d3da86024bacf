"""Evidence: documents, revisions, their storage, extraction into passages, and search."""
