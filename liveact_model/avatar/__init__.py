# The embedded tiny avatar: procedural data (render, audio), tiny video VAE, IO, metrics and the bundled model.
