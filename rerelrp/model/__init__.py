"""The network: backbones whose units are enumerable by layer, growth, unit ownership and freezing, inputs."""
