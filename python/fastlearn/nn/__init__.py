"""Neural models as PyTorch modules and scikit-learn estimators: Autoencoder, VAE, GAN, the shared
training loop (``fastlearn.nn.training``) and an offline judge for generated digits
(``fastlearn.nn.judge``)."""

from fastlearn.nn.autoencoder import Autoencoder, AutoencoderModule
from fastlearn.nn.gan import GAN, GANModule
from fastlearn.nn.training import History, Trainer, load_checkpoint, save_checkpoint
from fastlearn.nn.vae import VAE, VAEModule

__all__ = ["Autoencoder", "AutoencoderModule", "VAE", "VAEModule", "GAN", "GANModule", "Trainer", "History",
           "save_checkpoint", "load_checkpoint"]
