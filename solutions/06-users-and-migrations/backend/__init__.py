"""Chapter 5 backend: instances that share one database and take turns on each thread."""
