"""The student in a web browser: the page's sources (HTML, JavaScript, CSS, the npm lock file,
package data), ``build`` (`tha export --web`: the static site), ``shared`` (the data the page
shares with Python) and ``serve`` (`tha serve-web`).

It sits on top of the other packages: it reads the runtime's emotions, animator and webcam
definitions and the viewer's slider panels, and nothing below imports it."""
