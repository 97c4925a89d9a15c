"""Text front ends: tokenizers for the text encoders."""
