"""alray: active learning on Ray.

Rank the unlabeled images of an annotation project by how much the current model would learn
from them, so people label the most informative images first.

"""

from alray import settings  # heuristics joins when it lands
from alray.project import Project, list_projects

__all__ = ["Project", "list_projects", "settings"]
__version__ = "0.1.0"
