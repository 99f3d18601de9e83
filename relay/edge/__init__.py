"""Township edge agent: DICOM SCP, durable spool, forwarder to the county, status.

Never imports relay.county: the edge shares only relay.dicom and the HTTP contract
in relay.dicom.wire with the county.
"""
