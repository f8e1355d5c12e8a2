"""The pure core: values, events and rules of the CloudPBX API. No I/O happens here."""
