"""The mixture SIREN as a representation (mixinr.representation): K shared weight sets of one small
SIREN, image i decoded with its own mix of them. Its network and fitting are mixinr/model.py,
mixinr/train.py and mixinr/quantise.py; here its encoder side (encoder.py) and its archives (archive.py,
format version 1)."""

from mixinr import bitstream
from mixinr.representation import Representation
from mixinr.siren.archive import Archive
from mixinr.siren.encoder import SirenPlan

REPRESENTATION = Representation("siren", bitstream.VERSION, plan=SirenPlan, read=Archive.from_bytes)
