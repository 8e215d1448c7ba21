"""What to fix in your data: `advise(RUN)` (advise.py) says, class by class, which photos
look mislabelled, unlike any class or duplicated, how many more photos each class needs,
and the three things most worth doing next.

It stands on the trained network's features for every photo of the run (`features.py`, one
pass, kept) and on small heads trained on them: class probabilities judged out of sample
(`out_of_sample.py`) and learning curves (`learning_curve.py`).
"""

from clearclass.advice.advise import Advice, ClassAdvice, advise

__all__ = ["Advice", "ClassAdvice", "advise"]
