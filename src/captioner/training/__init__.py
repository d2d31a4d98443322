"""Training on your own captions: data readers, tokenisation, vocabulary, synthetic scenes."""
