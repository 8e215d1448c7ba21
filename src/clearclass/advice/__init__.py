<<<<<<< HEAD
"""What to fix in your data: `advise(RUN)` (advise.py) says, class by class, which photos
look mislabelled, unlike any class or duplicated, how many more photos each class needs,
and the three things most worth doing next.

It stands on the trained network's features for every photo of the run (`features.py`, one
pass, kept) and on small heads trained on them: class probabilities judged out of sample
(`out_of_sample.py`) and learning curves (`learning_curve.py`).
=======
"""What to fix in your data (issue 23, in progress): the trained network's features for
every photo of a run (`features.py`), class probabilities judged out of sample
(`out_of_sample.py`), and what cleanlab finds from them: label issues
(`label_issues.py`), photos unlike any class (`outliers.py`) and photos that look the same
to the model (`near_duplicates.py`). Plain functions over arrays, no printing, no files:
`clean` and the advice commands report what they return.
>>>>>>> label-issues
"""

from clearclass.advice.advise import Advice, ClassAdvice, advise

__all__ = ["Advice", "ClassAdvice", "advise"]
