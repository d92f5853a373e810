"""Training: the one loop that trains the teacher and fine-tunes or distils every student
(loop.py: one-cycle SGD or AdamW, seeded, augmentation for images), and the helpers that run a
torch model on named inputs."""
