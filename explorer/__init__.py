"""The Inception block explorer: data, training, search, export, metrics."""
