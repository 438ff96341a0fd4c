"""Which host serves a request: eligibility, policies, lag bounds, tokens, pins.

Plain functions over a topology snapshot and the caller's context. The faces
(the async manager, later the sync one and Django) ask; routing decides, so
every face makes the same decision the same way.
"""
