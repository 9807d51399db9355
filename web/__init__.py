"""The web page's sources (HTML, JavaScript, CSS, the npm lock file): package data that
`tha export --web` copies into a site (see tha.export.web)."""
