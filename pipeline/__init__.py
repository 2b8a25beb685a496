"""Pipeline definition, configuration and runners of the captioner."""
