"""Online forecasts: a KServe model server for tsops models (V1 and V2 protocols)."""
