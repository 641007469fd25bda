"""The paper's evaluation protocol: M_A, G_A and epochs-to-target (ETT).

Each epoch the model is evaluated with hard inference on the whole training split and on the
validation split. M_A is the best training-split accuracy and ETT_M the 1-based epoch that reached
it; the best validation epoch (ETT_G) selects the checkpoint whose test accuracy is G_A. Training
stops once neither score improved for ``patience`` epochs: ``improvements`` counts the epochs in
which either improved, so Lightning's EarlyStopping can watch it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ProtocolTracker:
    """Best training-split and validation accuracy so far, and the epochs they were reached."""

    best_train: float = float("-inf")
    best_val: float = float("-inf")
    ett_m: int | None = None
    ett_g: int | None = None
    improvements: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def update(self, epoch: int, train_acc: float, val_acc: float) -> None:
        """Record 1-based ``epoch`` with its hard accuracies (fractions in [0, 1])."""
        improved = False
        if train_acc > self.best_train:
            self.best_train, self.ett_m, improved = train_acc, epoch, True
        if val_acc > self.best_val:
            self.best_val, self.ett_g, improved = val_acc, epoch, True
        self.improvements += int(improved)
        self.history.append({"epoch": epoch, "train_acc": train_acc, "val_acc": val_acc})

    @property
    def memorization_accuracy(self) -> float | None:
        """M_A as a fraction, or None before the first epoch."""
        return None if self.ett_m is None else self.best_train

    def state_dict(self) -> dict:
        return {
            "best_train": self.best_train,
            "best_val": self.best_val,
            "ett_m": self.ett_m,
            "ett_g": self.ett_g,
            "improvements": self.improvements,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
