"""Configuration: params.yaml's typed schema (params.py; its defaults are params.yaml's), the
deployment profiles that fold in a recipe and budgets (profiles.py), the quantization schemes
(schemes.py), the rules for the files params name (paths.py: inside the project) and for the code
they name (user_code.py: trusted factories only). Everything here is plain Python: no torch."""
