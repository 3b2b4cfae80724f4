"""Open-set recognition: say "unknown" for pictures that are not Gen-1 Pokemon.

    pokemon-classifier calibrate --weights best.pt --data data/ --negatives negatives/   # fit, store in best.pt
    pokemon-classifier evaluate --weights best.pt --data data/ --split test --negatives negatives/

Max-softmax with one threshold cannot separate a blank page ("Ditto 81%") from a real Ditto, so
the score here also lives in feature space, from the same forward pass as the prediction: the
similarity of the penultimate features to the nearest training image (a PCA bank small enough for
the checkpoint), a linear "is this a Gen-1 Pokemon?" head fitted on training features plus
texture statistics of a middle stage against tuning negatives and generated degenerate pictures
(outlier exposure at the head), and the calibrated top probability. Higher score = more likely a
Gen-1 Pokemon; below the stored threshold (a tolerance bound on the validation scores) the
answer is unknown. With `calibrate --flip` the score is the mean over the picture and its
mirror image (twice the compute; docs/unknown.md has what it changed).

Negatives used to fit and tune never overlap those used to report: `split_negatives` halves the
photos by item and the later-generation Pokemon by species (artwork and icon of one species stay
on the same side), and the degenerate pictures are generated with different seeds.

One module per job: scoring (the torch modules predict, serve and ONNX run; torch and numpy only),
fit (fitting the state calibrate stores), negatives (negatives on disk, tune/report halves),
degenerate (generated pictures), stats (threshold and rates), plots (the report's histogram).
"""

from pokemon_classifier.openset.degenerate import DEGENERATE_KINDS, degenerate_image, degenerate_set
from pokemon_classifier.openset.fit import OE_C, WEIGHTS, FitOptions, extract, fit, fit_from_files, style_features, to_checkpoint
from pokemon_classifier.openset.negatives import file_key, negative_item, read_negatives, split_negatives
from pokemon_classifier.openset.plots import plot_scores
from pokemon_classifier.openset.scoring import PARTS, OpenSetHead, Scored, WithFeatures
from pokemon_classifier.openset.stats import bound_met, rates, threshold_for

__all__ = ["DEGENERATE_KINDS", "OE_C", "PARTS", "WEIGHTS", "OpenSetHead", "Scored", "WithFeatures", "bound_met",
           "degenerate_image", "degenerate_set", "extract", "file_key", "fit", "FitOptions", "fit_from_files", "negative_item",
           "plot_scores", "rates", "read_negatives", "split_negatives", "style_features", "threshold_for", "to_checkpoint"]
