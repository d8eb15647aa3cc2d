"""Training of the avatar networks (torch). `bootstrap`: the interim default avatar, trained on data
generated straight from the synthetic world's components (host voice + host face), audio path only."""
