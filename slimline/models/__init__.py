"""Models: the architectures the line builds (a small ResNet, a MobileNet-style net,
EfficientNet-Lite with its pinned ImageNet weights, Hugging Face transformers rebuilt from their
config, a trusted user factory) and the teacher it starts from. `architectures.build_model` is the
one way a recipe's base model is made."""
