"""The torch networks (guest encoder, motion generator, renderer), shared by training and export."""
