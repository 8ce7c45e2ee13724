"""Clients for the systems rackpilot's executor drives: Dell iDRAC over Redfish
(`redfish`, with the Dell OEM surface in `dell`), OpenManage Enterprise (`ome`), and Dell
firmware catalogs (`catalog`). Errors: `errors.TargetError` and its subclasses."""
