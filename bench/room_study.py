"""Why a small first task cannot leave ``min_free`` free by a better criterion alone, and what fine-tuning buys.

For the first task of a data set, per seed: accuracy and loss of the trained network on the images
the search judges (validation images, topped up with training images up to ``prune_samples``),
then with each layer's least relevant ``share`` of units dropped *without* retraining (BatchNorm
statistics recomputed for that sub-network, as the search judges every cut), then the learner's own
outcome (the search, and making room when it leaves a shortfall). If the dropped-without-retraining
rows are far below the full network on loss as well as accuracy, no loss or margin criterion could
accept them either. Test images are not read.

    OMP_NUM_THREADS=2 .venv/bin/python bench/room_study.py --data /path/to/small/folder --seeds 0 1 2

The 42-image folder of docs/method-notes.md (the one tests/test_room.py builds), from ../shared/data/dicom:

    D=../shared/data/dicom; F=/tmp/small3; mkdir -p $F/ct $F/mr_epi $F/mr_brain
    ls $D/ct_vs_mr/ct | grep -v DIRFILE | sort | head -14 | xargs -I{} cp $D/ct_vs_mr/ct/{} $F/ct/
    ls $D/ct_vs_mr/mr | sort | head -20 | xargs -I{} cp $D/ct_vs_mr/mr/{} $F/mr_epi/
    cp $D/mr_brain_series/*.dcm $D/mr_epi_pair/*.dcm $F/mr_brain/
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rerelrp.data import build_sequence, load_dataset  # noqa: E402
from rerelrp.method.learner import ReReLRP  # noqa: E402
from rerelrp.method.training import recalibrate_batchnorm  # noqa: E402
from rerelrp.model.inputs import ImageSource, LazyInputs  # noqa: E402


class StudyLearner(ReReLRP):
    """ReReLRP that measures fixed per-layer cuts of the trained network before its own search runs."""

    shares = (0.1, 0.2)

    def _prune(self, task, t, scores, rng, report, trained):
        x_val, y_val = LazyInputs(task.val.images, self.input_size_), torch.as_tensor(task.val.labels)
        top_up = self.prune_samples - len(y_val)
        if top_up > 0:  # the images the search judges on: validation, topped up with training images
            x_train, y_train = self._sample(task.train, top_up, copy.deepcopy(rng))
            x_val, y_val = LazyInputs.cat([x_val, x_train]), torch.cat([y_val, y_train])
        source = ImageSource([task.train.images], self.input_size_, self.device_)
        saved = {k: v.clone() for k, v in self.net_.state_dict().items()}
        self.rows = [("trained network", self._subnetworks().scores(x_val, y_val, t))]
        for share in self.shares:
            kept = np.ones(len(scores), bool)
            for sl in self.ledger_.slices.values():
                idx = np.arange(sl.start, sl.stop)
                kept[idx[np.argsort(scores[idx], kind="stable")[: math.ceil(share * len(idx))]]] = False
            masks = self._masks(kept)
            if trained.recalibrated:
                recalibrate_batchnorm(self.net_, source, trained.freezer, masks=masks,
                                      generator=torch.Generator().manual_seed(self.task_seed(t)))
            self.rows.append((f"each layer's least relevant {share:.0%} dropped, not retrained",
                              self._subnetworks().scores(x_val, y_val, t, masks)))
        self.net_.load_state_dict(saved)
        return super()._prune(task, t, scores, rng, report, trained)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--room-steps", type=int, default=100)
    args = parser.parse_args()
    for seed in args.seeds:
        task = build_sequence([load_dataset(args.data, seed=seed)])[0]
        learner = StudyLearner(seed=seed, room_steps=args.room_steps).add_task(task)
        prune = learner.history_[0].prune
        print(f"seed {seed}: {len(task.train)} train / {len(task.val)} val images; cut judged on "
              f"{prune['search_images']} images")
        for label, s in learner.rows:
            print(f"  {label}: accuracy {s['val_acc']:.1f} %, loss {s['val_loss']:.3f}")
        free = {r["layer"]: f"{r['free']}/{r['units']}" for r in learner.capacity()}
        print(f"  the learner: making room {prune['room'] or 'not needed'}; kept sub-network val acc "
              f"{prune['val_acc_kept']:.1f} % (trained {prune['val_acc_full']:.1f} %); free units {free}")


if __name__ == "__main__":
    main()
