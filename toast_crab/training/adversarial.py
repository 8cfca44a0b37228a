"""Parts shared by the adversarial trainers: two optimizers and the EMA generator."""

import keras
from keras import ops

__all__ = ["AdversarialTrainer"]


class AdversarialTrainer(keras.Model):
    """Base of the GAN trainers (``crab_bce``, ``wgan_gp``, ``seamless``).

    Subclasses set ``generator``, ``ema_generator`` and ``ema_decay``, and return their
    discriminator or critic from :meth:`_opponent`.
    """

    def _opponent(self):
        """Return the network trained against the generator."""
        raise NotImplementedError

    def compile(self, g_optimizer, d_optimizer, **kwargs):
        """Set the two optimizers. XLA stays off: it is slower on CPU for these nets."""
        kwargs.setdefault("jit_compile", False)
        super().compile(**kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self._opponent().trainable_variables)

    def _update_ema(self):
        """Move the EMA weights towards the generator's, with a warm-up on early steps."""
        done = ops.cast(self.g_optimizer.iterations, "float32")
        decay = ops.minimum(self.ema_decay, (1.0 + done) / (10.0 + done))
        for average, current in zip(self.ema_generator.weights, self.generator.weights):
            average.assign(decay * average + (1.0 - decay) * current)
