"""vLLM V1 adapter of the tiered cache.

    --kv-transfer-config '{"kv_connector":"TieredOffloadConnector","kv_connector_module_path":"connector.vllm",
                           "kv_role":"kv_both","kv_load_failure_policy":"recompute"}'

`AIBrixOffloadingConnectorV1Type3` names the same class, so deployments written for that connector
work by adding `"kv_connector_module_path":"connector.vllm"`.
"""

from connector.vllm.connector import TieredOffloadConnector

AIBrixOffloadingConnectorV1Type3 = TieredOffloadConnector

__all__ = ["AIBrixOffloadingConnectorV1Type3", "TieredOffloadConnector"]
