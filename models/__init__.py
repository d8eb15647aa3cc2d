"""The torch networks of the avatar (guest encoder, motion generator, renderer), shared by training
and export. The serving path never imports this package."""
