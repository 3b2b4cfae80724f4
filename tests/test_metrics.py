"""Metric values against hand-computed ones."""

import numpy as np
import pytest

from pokemon_classifier import metrics as M

P = np.array([[0.7, 0.2, 0.1],   # y=0 correct, conf 0.7
              [0.1, 0.3, 0.6],   # y=1 wrong (pred 2), y in top-2
              [0.2, 0.5, 0.3],   # y=1 correct, conf 0.5
              [0.05, 0.9, 0.05]])  # y=2 wrong (pred 1), y is 2nd (tie 0.05 with class 0)
Y = np.array([0, 1, 1, 2])


def test_topk():
    assert M.topk_accuracy(P, Y, 1) == 0.5
    assert M.topk_accuracy(P, Y, 2) == 0.75  # row 4: top-2 = {1, one of 0/2}; partition keeps index 0 or 2
    assert M.topk_accuracy(P, Y, 3) == 1.0


def test_macro_f1_by_hand():
    # preds: 0, 2, 1, 1. class0: tp1 fp0 fn0 -> 1. class1: tp1 fp1 fn1 -> 0.5. class2: tp0 fp1 fn1 -> 0
    assert M.macro_f1(P, Y) == pytest.approx((1 + 0.5 + 0) / 3)


def test_nll_by_hand():
    assert M.nll(P, Y) == pytest.approx(-(np.log(0.7) + np.log(0.3) + np.log(0.5) + np.log(0.05)) / 4)


def test_ece_by_hand():
    # 15 bins of width 1/15: conf 0.7 (bin 10, acc 1), 0.6 (bin 8, acc 0), 0.5 (bin 7, acc 1), 0.9 (bin 13, acc 0)
    expected = (abs(1 - 0.7) + abs(0 - 0.6) + abs(1 - 0.5) + abs(0 - 0.9)) / 4
    assert M.ece(P, Y, 15) == pytest.approx(expected)
    # two in one bin average before the gap is taken
    p2 = np.array([[0.8, 0.2], [0.8, 0.2]])
    assert M.ece(p2, np.array([0, 1]), 15) == pytest.approx(abs(0.5 - 0.8))


def test_confusion_and_top_pairs():
    cm = M.confusion(Y, P.argmax(1), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 0]]
    assert set(M.top_confusions(cm, 5)) == {(1, 2, 1), (2, 1, 1)}


def test_perfectly_calibrated_has_zero_ece():
    p = np.array([[1.0, 0.0]] * 10)
    assert M.ece(p, np.zeros(10, int)) == 0.0
