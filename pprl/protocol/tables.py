"""Reading a party's own CSV files strictly: every value a string, problems named by file, row and column."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pprl.errors import DataValidationError

__all__ = ["load_records", "own_records", "read_table", "require_columns"]


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load a UTF-8 CSV with a header row; all values as strings, empty cells as ''."""
    p = Path(path)
    if not p.exists():
        raise DataValidationError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise DataValidationError(f"{p}: file is empty; expected a CSV with a header row")
    try:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    except UnicodeDecodeError:
        raise DataValidationError(f"{p}: not UTF-8 text; re-save the CSV as UTF-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataValidationError(f"{p}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if len(frame) == 0:
        raise DataValidationError(f"{p}: has a header but no records")
    return frame


def require_columns(frame: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    """Raise naming the first required column the table lacks."""
    for column in columns:
        if column not in frame.columns:
            have = ", ".join(map(str, frame.columns))
            raise DataValidationError(f"{source}: no column '{column}' (columns are: {have})")


def load_records(data: pd.DataFrame | str | os.PathLike[str]) -> tuple[str, pd.DataFrame]:
    """(name for error messages, table of strings) from a DataFrame or a CSV path; refuses an empty table."""
    source = "data" if isinstance(data, pd.DataFrame) else str(data)
    frame = data.fillna("").astype(str) if isinstance(data, pd.DataFrame) else read_table(data)
    if len(frame) == 0:
        raise DataValidationError(f"{source}: no records")
    return source, frame


def own_records(records: pd.DataFrame, id_column: str, columns: Sequence[str], source: str) -> pd.DataFrame:
    """A party's table checked for a step: values as strings, not empty, ``columns`` present, ids unique."""
    frame = records.fillna("").astype(str)
    if len(frame) == 0:
        raise DataValidationError(f"{source}: no records")
    require_columns(frame, [id_column, *columns], source)
    duplicated = frame[id_column].duplicated().to_numpy()
    if duplicated.any():
        row = int(duplicated.nonzero()[0][0]) + 1
        raise DataValidationError(f"{source}: row {row}: id column '{id_column}' repeats an earlier id; ids must be unique")
    return frame
