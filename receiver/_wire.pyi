"""Type stubs of the Cython wire kernels in _wire.pyx (see its docstring)."""

import numpy as np

E_TRUNCATED: int
E_VARINT_TOO_LONG: int
E_LENGTH: int
E_WIRE_TYPE: int
E_FIELD_TYPE: int
E_TOO_MANY: int
R_TRACE_ID: int
R_SPAN_ID: int
R_PARENT_ID: int
R_TOO_MANY_ATTRIBUTES: int
R_VALUE_TOO_LONG: int
R_TOO_DEEP: int
T_NONE: int
T_STRING: int
T_BOOL: int
T_INT: int

def index_spans(data: bytes | np.ndarray, max_items: int = ...) -> tuple[np.ndarray, np.ndarray, int, int]: ...
def parse_spans(
    data: bytes | np.ndarray,
    index: np.ndarray,
    limits: np.ndarray,
    keys: np.ndarray,
    keylens: np.ndarray,
    keycols: np.ndarray,
    keykinds: np.ndarray,
    ids: np.ndarray,
    kind: np.ndarray,
    times: np.ndarray,
    status: np.ndarray,
    name: np.ndarray,
    a_type: np.ndarray,
    a_off: np.ndarray,
    a_len: np.ndarray,
    a_int: np.ndarray,
    reject: np.ndarray,
) -> tuple[int, int]: ...
def intern_ranges(
    data: bytes | np.ndarray, offs: np.ndarray, lens: np.ndarray, max_probes: int = ...
) -> tuple[np.ndarray, np.ndarray] | None: ...
