"""How results look: terminal text (`tables`), plots, TensorBoard events, the embedding projector,
the HTML page and its thumbnails. Functions here return text or write pictures; they never print."""
