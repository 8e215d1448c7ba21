"""What to fix in your data: `advise(RUN)` (advising.py) says, class by class, which photos
look mislabelled, unlike any class or duplicated, how many more photos each class needs,
and the three things most worth doing next.

It stands on the trained network's features for every photo of the run (`features.py`, one
pass, kept) and on small heads trained on them: class probabilities judged out of sample
(`out_of_sample.py`), and what cleanlab and the neighbours in feature space find from them:
label issues (`label_issues.py`), photos unlike any class (`outliers.py`) and photos that
look the same to the model (`near_duplicates.py`); and learning curves with the photos each
class needs (`learning_curve.py`). Those are plain functions over arrays, no printing, no
files: `clean`, `advise` and the report show what they return.
"""

from clearclass.advice.advising import Advice, ClassAdvice, advise

__all__ = ["Advice", "ClassAdvice", "advise"]
