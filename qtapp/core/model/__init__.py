"""Layer 3: getting the user's model in: torchvision names, factories, state_dicts, pickles through an
allowlist, TorchScript; and the float rewrites applied at load. May import `config` and `base`; never `data`."""
