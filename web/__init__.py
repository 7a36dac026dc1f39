"""Static reports: what the database knows, rendered as HTML pages, JSON and list files that
any web server can publish, and as the terminal summary of ``pnfsmon status``."""
