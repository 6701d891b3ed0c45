"""The baseline for `jaxchain finetune`: a logistic regression (scikit-learn) on the frozen
MiniLM-L6 sentence embeddings of the VADER lexicon entries, on the same split.

    python bench/vader_baseline.py

The regularisation strength C is chosen on the validation split; prints test accuracy.
"""

import numpy as np
from sklearn.linear_model import LogisticRegression

from jaxchain import pretrained
from jaxchain.train import data


def main() -> None:
    lexicon, encoder = data.vader(), pretrained.load_minilm()
    (x_train, x_val, x_test) = (
        encoder.embed(list(s[0])) for s in (lexicon.train, lexicon.val, lexicon.test)
    )
    y_train, y_val, y_test = lexicon.train[1], lexicon.val[1], lexicon.test[1]
    scores = {}
    for c in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        scores[c] = (model.score(x_val, y_val), model)
    best = max(scores, key=lambda c: scores[c][0])
    val, model = scores[best]
    print(
        f"logistic regression on frozen embeddings: C={best}, val {val:.4f}, "
        f"test {model.score(x_test, y_test):.4f} ({len(y_test)} test entries, "
        f"{np.mean(y_test):.3f} positive)"
    )


if __name__ == "__main__":
    main()
