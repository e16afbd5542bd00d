"""Save and load fitted estimators without pickle: arrays go to a safetensors file, the
constructor parameters and scalar fitted attributes to its JSON metadata. The one format
for scikit-learn-style estimators (linear_model, naive_bayes, mixture and cluster use it
today; svm still has its own save/load and should move onto it)."""

from __future__ import annotations

import json

import numpy as np

_FORMAT = "fastlearn-estimator-v1"


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, dict):
        return {"__dict__": [[_jsonable(k), _jsonable(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save a value of type {type(value).__name__} ({value!r}) without pickle.")


def _from_json(value):
    if isinstance(value, dict) and "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"] if value["dtype"] != "object" else object)
    if isinstance(value, dict) and "__dict__" in value:
        return {_from_json(k): _from_json(v) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


class SaveLoadMixin:
    """``est.save(path)`` / ``Cls.load(path)``: a safetensors file, no pickle."""

    def save(self, path: str) -> None:
        from safetensors.numpy import save_file
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        tensors, scalars, lists = {}, {}, {}
        for key, value in vars(self).items():
            if not key.endswith("_") or key.startswith("_"):
                continue
            if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
                tensors[key] = np.ascontiguousarray(value)
            elif isinstance(value, list) and value and all(
                    isinstance(v, np.ndarray) and v.dtype.kind in "fiub" for v in value):
                lists[key] = len(value)
                for i, v in enumerate(value):
                    tensors[f"{key}/{i}"] = np.ascontiguousarray(v)
            else:
                scalars[key] = _jsonable(value)
        for key, value in getattr(self, "_persist_private", lambda: {})().items():
            tensors[f"_private/{key}"] = np.ascontiguousarray(value)
        meta = {
            "format": _FORMAT,
            "class": type(self).__name__,
            "params": json.dumps(_jsonable(self._persist_params())),
            "scalars": json.dumps(scalars),
            "lists": json.dumps(lists),
        }
        save_file(tensors, path, metadata=meta)

    def _persist_params(self) -> dict:
        """The constructor parameters to save. A RandomState instance as ``random_state`` is
        saved as None (its state is not kept; the fitted attributes are); estimators whose
        parameters may hold other things JSON cannot (a callable) replace those too."""
        params = self.get_params(deep=False)
        rs = params.get("random_state")
        if rs is not None and not isinstance(rs, (int, np.integer)):
            params["random_state"] = None
        return params

    @classmethod
    def load(cls, path: str):
        from safetensors import SafetensorError, safe_open

        try:
            f = safe_open(path, framework="numpy")
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{str(path)!r} is not a fastlearn estimator file (the safetensors file that "
                             f"{cls.__name__}.save writes): {e}") from None
        with f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{str(path)!r} is not a fastlearn estimator file (format {meta.get('format')!r}).")
            if meta.get("class") != cls.__name__:
                raise ValueError(f"{str(path)!r} holds a {meta.get('class')}, not a {cls.__name__}; "
                                 f"load it with {meta.get('class')}.load.")
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        est = cls(**_from_json(json.loads(meta["params"])))
        for key, value in json.loads(meta["scalars"]).items():
            setattr(est, key, _from_json(value))
        for key, count in json.loads(meta["lists"]).items():
            setattr(est, key, [arrays.pop(f"{key}/{i}") for i in range(count)])
        private = {}
        for key, value in arrays.items():
            if key.startswith("_private/"):
                private[key[len("_private/"):]] = value
            else:
                setattr(est, key, value)
        if private:
            est._restore_private(private)
        return est
