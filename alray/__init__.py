"""alray: active learning on Ray.

Rank the unlabeled images of an annotation project by how much the current model would learn
from them, so people label the most informative images first.

>>> import alray
>>> alray.heuristics.score("margin", [[0.5, 0.5]]).tolist()
[1.0]
"""

from alray import heuristics, ranking, settings
from alray.project import Project, list_projects

__all__ = ["Project", "heuristics", "list_projects", "ranking", "settings"]
__version__ = "0.1.0"
