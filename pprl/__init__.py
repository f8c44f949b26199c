"""pprl: privacy-preserving record linkage and encrypted score sharing.

The names below are what a pipeline needs; each party's steps live in
``pprl.parties`` and the primitives in ``pprl.crypto`` and ``pprl.linkage``.
"""

from pprl.audit import verify_log
from pprl.errors import PPRLError
from pprl.parties.authority import decrypt_release, paillier_keygen
from pprl.parties.bureau import link
from pprl.parties.release import aggregate
from pprl.parties.identity import init_party, load_card, load_key
from pprl.parties.platform import submit
from pprl.parties.secret import combine_secrets, share_secret
from pprl.synth import generate_population

__version__ = "0.1.0"
__all__ = [
    "PPRLError",
    "__version__",
    "aggregate",
    "combine_secrets",
    "decrypt_release",
    "generate_population",
    "init_party",
    "link",
    "load_card",
    "load_key",
    "paillier_keygen",
    "share_secret",
    "submit",
    "verify_log",
]
