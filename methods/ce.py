"""`ce`: the plain student, cross-entropy on the labels (with the recipe's label smoothing).

Loss = CE(student logits, y). Also added to any method none of whose terms supervises the student.
"""
from __future__ import annotations

from methods.base import Term, cross_entropy, register


@register
class CrossEntropy(Term):
    name = "ce"
    supervises = True

    def losses(self, batch, student, teachers):
        return {"ce": cross_entropy(student.logits, batch.labels, self.label_smoothing)}
