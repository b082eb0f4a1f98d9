"""mlserver-mlflow's ``MLflowRuntime`` with the two fixes a tsops pyfunc model needs.

Loaded by MLServer from the generated model repository (``run.py`` copies this file
next to ``model-settings.json``). The MLflow model itself is served unchanged:

- mlserver-mlflow 1.7.1 fails to load a model whose signature declares inputs but no
  outputs (``to_metadata_tensors(None)``: AttributeError); tsops signatures have no
  output schema, so the output metadata is left empty instead;
- MLServer's PandasCodec cannot encode ``datetime64`` columns (``KeyError: 'M'`` in
  ``to_datatype``); the forecast's ``ds`` and ``cutoff`` are sent as ISO 8601 strings,
  as tsops' own server does.
"""

from __future__ import annotations

import pandas as pd
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver_mlflow import MLflowRuntime
from mlserver_mlflow.codecs import TensorDictCodec
from mlserver_mlflow.metadata import DefaultInputPrefix, to_metadata_tensors


class TsopsMLflowRuntime(MLflowRuntime):
    def _sync_metadata(self) -> None:
        if self._signature is not None and self._signature.outputs is None:
            self.inputs = to_metadata_tensors(
                schema=self._signature.inputs, prefix=DefaultInputPrefix
            )
            self.outputs = []
            # what the parent sets too: decode requests as a pandas DataFrame
            from mlserver.settings import ModelParameters
            from mlserver_mlflow.metadata import to_model_content_type

            if not self._settings.parameters:
                self._settings.parameters = ModelParameters()
            self._settings.parameters.content_type = to_model_content_type(
                schema=self._signature.inputs
            )
            return
        super()._sync_metadata()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        decoded = self.decode_request(payload)
        params = None
        if payload.parameters and payload.parameters.model_extra:
            params = payload.parameters.model_extra
        output = self._model.predict(decoded, params=params)
        if isinstance(output, pd.DataFrame):
            for col in output.columns:
                if pd.api.types.is_datetime64_any_dtype(output[col]):
                    output[col] = output[col].dt.strftime("%Y-%m-%dT%H:%M:%S")
        return self.encode_response(output, default_codec=TensorDictCodec)
