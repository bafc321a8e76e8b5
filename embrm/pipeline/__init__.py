"""The pipeline around extraction: generate responses, annotate golden rewards, the demo
and the seed paper's case studies."""
