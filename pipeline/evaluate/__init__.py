"""Evaluation of avatars on the curated test split (`f2f evaluate`)."""
