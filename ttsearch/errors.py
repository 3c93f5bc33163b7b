"""Every error ttsearch raises on purpose, under one base class.

Catch `TTSearchError` for all of them. Each also derives from the builtin a caller would
expect (`ValueError` for bad input, `RuntimeError` for a failure while running), and each
message names the bad input: which file, field, problem or engine, and what is allowed.
"""

from __future__ import annotations


class TTSearchError(Exception):
    """Base class of ttsearch's errors."""


# -- bad input ------------------------------------------------------------------------


class RecipeError(TTSearchError, ValueError):
    """A recipe is invalid: which file and field, what is wrong, what is allowed."""


class DatasetError(TTSearchError, ValueError):
    """A dataset source is missing, unreadable or holds an invalid record."""


class ProblemError(TTSearchError, ValueError):
    """This problem cannot be searched (empty, or its prompt does not fit the model)."""


class RecordsError(TTSearchError, ValueError):
    """A results file cannot be read (which file and line, what is wrong); see docs/records.md."""


class ExperimentError(TTSearchError, ValueError):
    """An experiment directory cannot be used (which directory or file, what is wrong)."""


class PolicyFileError(TTSearchError, ValueError):
    """A compute-optimal policy table cannot be used (which file, what is wrong)."""


# -- failures while running -----------------------------------------------------------


class SearchError(TTSearchError, RuntimeError):
    """The search could not go on: a model engine failed, or the searcher was misused."""


class BackendError(TTSearchError, RuntimeError):
    """A model engine failed (died, rejected a request, or returned something unusable)."""


class PromptTooLongError(BackendError):
    """The prompt (plus anything to generate) does not fit the model's context."""


class RequestFailedError(BackendError):
    """One request failed while its engine or server is healthy (e.g. a server's 4xx, or a
    5xx / timeout its health check clears): the request's fault, so its problem fails and
    the others go on."""


class GradingError(TTSearchError, RuntimeError):
    """An answer could not be graded: the grader itself cannot run (e.g. its worker
    process does not start). Never a verdict: the answer is neither right nor wrong."""
