"""Standards catalogs: the built-in accreditor catalogs, custom frameworks imported into a
workspace, and the catalogs each workspace is reviewed against."""
