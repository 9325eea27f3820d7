"""The endpoints: `/healthz`, the queries, one lead's history and the HTML report, each handing
its work to the query threads. Their signatures (and `responses`) are the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi import Query as Param
from fastapi.responses import HTMLResponse, Response

from leadledger import csvout
from leadledger.answers import leads_answer, sla_answer, tidy, window_answer
from leadledger.http.auth import token_check
from leadledger.http.models import (
    AUTH_RESPONSES,
    CSV_CONTENT,
    ERROR_RESPONSES,
    SERVER_RESPONSES,
    AttributionBody,
    ErrorBody,
    FunnelBody,
    Health,
    HistoryBody,
    JSONBody,
    LeadsBody,
    PipelineBody,
    PlanBody,
    QualificationBody,
    ReasonsBody,
    SlaBody,
    SpeedSplitBody,
    VelocityBody,
    error,
)
from leadledger.http.params import (
    PERIOD_PATTERN,
    AfterParam,
    AsOfParam,
    CompareToParam,
    ConversionParam,
    DrillByParam,
    DrillModeParam,
    FromParam,
    FunnelByParam,
    IntervalParam,
    KeyParam,
    KnownAtParam,
    LeadIdParam,
    LeadsByParam,
    LimitParam,
    LookbackParam,
    MixParam,
    ModelParam,
    ModeParam,
    ParameterError,
    PeriodParam,
    PipelineByParam,
    ReachedParam,
    ReasonsByParam,
    ReasonStageParam,
    RevenueParam,
    SlaByParam,
    SpeedByParam,
    StageParam,
    ToParam,
    build_query,
    check_known_parameters,
    parse_lead_id,
    parse_period,
    parse_time,
)
from leadledger.http.worker import AnalyticsWorker
from projections.plan import DEFAULT_LOOKBACK, PlanQuery, parse_mix
from projections.report.html import render_report
from schemas.sealing import ERASED, PERSONAL_FIELDS

#: what a personal field (e-mail, name, phone) reads as when `serve` does not hand out personal data
SEALED = "[sealed]"


def seal_personal(body: dict[str, Any]) -> dict[str, Any]:
    """A history with every personal field that holds a value shown as `[sealed]` (erased stays
    `[erased]`, absent stays null)."""
    events = []
    for envelope in body["events"]:
        data = envelope.get("data")
        if isinstance(data, dict) and any(data.get(f) not in (None, ERASED) for f in PERSONAL_FIELDS):
            data = {k: (SEALED if k in PERSONAL_FIELDS and v not in (None, ERASED) else v) for k, v in data.items()}
            envelope = {**envelope, "data": data}
        events.append(envelope)
    return {**body, "events": events}


def _quality(accept: str, media: str) -> float:
    """The q-value `accept` gives `media` (its most specific matching range; 0 if none matches)."""
    kind = media.split("/")[0]
    best, q = -1, 0.0
    for part in accept.split(","):
        pieces = [p.strip() for p in part.split(";")]
        pattern = pieces[0].lower()
        value = 1.0
        for param in pieces[1:]:
            name, _, number = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    value = float(number)
                except ValueError:
                    value = 0.0
        rank = 2 if pattern == media else 1 if pattern == f"{kind}/*" else 0 if pattern == "*/*" else -1
        if rank > best:
            best, q = rank, value
    return q if best >= 0 else 0.0


def wants_csv(request: Request) -> bool:
    """Whether the request's Accept header prefers text/csv to application/json (JSON on a tie or without one)."""
    accept = request.headers.get("accept")
    if not accept:
        return False
    return _quality(accept, "text/csv") > _quality(accept, "application/json")


def respond(request: Request, body: dict[str, Any], name: str) -> Response:
    """The answer as JSON, or as CSV when the request asks for it (`Accept: text/csv`)."""
    if wants_csv(request):
        return Response(csvout.render(body), media_type=csvout.MEDIA_TYPE,
                        headers={"Content-Disposition": f'inline; filename="{name}.csv"', "Vary": "Accept"})
    return JSONBody(body, headers={"Vary": "Accept"})


def _ok(model: Any, what: str, **extra: Any) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": DESCRIPTIONS[what], "content": CSV_CONTENT, **extra}}


DESCRIPTIONS = {
    "funnel": "Distinct leads per stage and the conversion between main-path stages (the CLI's `funnel --json`).",
    "velocity": "Time in stage and time to stage: count, mean, p50, p90 in seconds (`velocity --json`).",
    "attribution": "Conversions and won revenue credited to channels or campaigns (`attribution --json`).",
    "speed": "Assignments, contacted, within 5 minutes, p50 and p90 of time to first contact, and the system "
             "delay (to assignment) apart from the human delay (to contact) (`speed --json`).",
    "sla": "SLA clocks started in the window per rule or owner: started, met, breached, restarted, open, "
           "at_risk, compliance, p50/p90 of the counted time to stop (`sla --json`).",
    "qualification": "MQL entries in the window by source (scorer, external, override) with the distinct leads, "
                     "those won after an entry and the MQL -> won rate, and the total (`qualification --json`).",
    "plan": "Per group, the cohort's win rate (80 % Wilson interval), revenue per won lead and share, and the "
            "deals, leads and stage entries the target needs, with the reps' capacity check (`plan --json`).",
    "leads": "The lead list, newest capture first; with `reached`, one page of the leads a funnel cell counts "
             "(`leads --json`).",
    "reasons": "The reasons given by the events entering the stage in the window, per group: the events, and each "
               "reason's count and share, most frequent first (`reasons --json`).",
    "pipeline": "The leads open at as_of per stage (mql, sal, sql) per owner, channel or campaign, and the "
                "expected value of those in sql, with the total (`pipeline --json`).",
    "history": "The lead's events as CloudEvents envelopes and its stage at `as_of` (`history --json`; "
               "personal data sealed unless served with --personal-data).",
}


#: the operation id of a lead's history, the target of the links from the lead list
HISTORY = "lead_history"
LEAD_LINKS = {"history": {"operationId": HISTORY, "parameters": {"lead_id": "$response.body#/leads/0/lead_id"},
                          "description": "The history of the list's first lead."}}


# FastAPI resolves the endpoints' postponed annotations in this module's globals: the parameter
# types, `Annotated` and `Param` are imported here even though only annotations use them.
def add_routes(app: FastAPI, worker: AnalyticsWorker, token: str | None, *, personal_data: bool = False) -> None:
    """`/healthz` (always public), then every data endpoint (behind the token, if any). Personal
    data leaves `/leads/{id}/history` only with `personal_data` (which needs a token)."""
    if personal_data and not token:
        raise ValueError("personal data is served only behind a bearer token")

    @app.get("/healthz", response_model=None, summary="Liveness", tags=["meta"], operation_id="healthz",
             dependencies=[Depends(check_known_parameters)],
             responses={200: {"model": Health, "description": "The server is up."}, **ERROR_RESPONSES})
    async def healthz() -> Response:
        return JSONBody({"status": "ok"})

    router = APIRouter(
        dependencies=[*([Depends(token_check(token))] if token else []), Depends(check_known_parameters)],
        responses={**ERROR_RESPONSES, **(AUTH_RESPONSES if token else {}), **SERVER_RESPONSES},
    )

    @router.get("/funnel", operation_id="funnel", response_model=None,
                summary="Funnel: leads per stage", tags=["queries"],
                responses=_ok(FunnelBody, "funnel"))
    async def funnel(request: Request, by: FunnelByParam = None, from_: FromParam = None, to: ToParam = None,
                     mode: ModeParam = "cohort", as_of: AsOfParam = None, known_at: KnownAtParam = None,
                     interval: IntervalParam = None, compare_to: CompareToParam = None) -> Response:
        """How many leads reach each stage, and the conversion between main-path stages."""
        q = build_query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at, interval=interval,
                        compare_to=compare_to)
        return respond(request, window_answer(await worker.run(lambda a: a.funnel(q)), q), "funnel")

    @router.get("/velocity", operation_id="velocity", response_model=None,
                summary="Velocity: time in and to stages", tags=["queries"],
                responses=_ok(VelocityBody, "velocity"))
    async def velocity(request: Request, by: LeadsByParam = None, from_: FromParam = None, to: ToParam = None,
                       mode: ModeParam = "cohort", as_of: AsOfParam = None, known_at: KnownAtParam = None,
                       compare_to: CompareToParam = None) -> Response:
        """Time in each stage (completed stays) and from capture to each stage: count, mean, p50, p90."""
        q = build_query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at,
                        compare_to=compare_to)
        return respond(request, window_answer(await worker.run(lambda a: a.velocity(q)), q), "velocity")

    @router.get("/attribution", operation_id="attribution", response_model=None, summary="Attribution: credit per source",
                tags=["queries"], responses=_ok(AttributionBody, "attribution"))
    async def attribution(request: Request, by: LeadsByParam = None, from_: FromParam = None, to: ToParam = None,
                          mode: ModeParam = "cohort", model: ModelParam = "linear",
                          conversion: ConversionParam = "won", as_of: AsOfParam = None,
                          known_at: KnownAtParam = None, compare_to: CompareToParam = None) -> Response:
        """Conversions (and, for won, revenue) credited to channels or campaigns under a model."""
        q = build_query(by=by, from_=from_, to=to, mode=mode, model=model, conversion=conversion,
                        as_of=as_of, known_at=known_at, compare_to=compare_to)
        return respond(request, window_answer(await worker.run(lambda a: a.attribution(q)), q), "attribution")

    @router.get("/speed", operation_id="speed", response_model=None,
                summary="Speed to lead", tags=["queries"],
                responses=_ok(SpeedSplitBody, "speed"))
    async def speed(request: Request, by: SpeedByParam = None, from_: FromParam = None, to: ToParam = None,
                    mode: ModeParam = "cohort", as_of: AsOfParam = None, known_at: KnownAtParam = None,
                    compare_to: CompareToParam = None) -> Response:
        """Per assignment, the time to the lead's first contact: assignments, contacted, within 5 minutes, p50, p90."""
        q = build_query(by=by, from_=from_, to=to, mode=mode, as_of=as_of, known_at=known_at,
                        compare_to=compare_to)
        return respond(request, window_answer(await worker.run(lambda a: a.speed(q)), q), "speed")

    @router.get("/sla", operation_id="sla", response_model=None,
                summary="SLA compliance", tags=["queries"],
                responses=_ok(SlaBody, "sla"))
    async def sla(request: Request, by: SlaByParam = "rule", from_: FromParam = None, to: ToParam = None, as_of: AsOfParam = None,
                  known_at: KnownAtParam = None) -> Response:
        """Per SLA rule (or rule and owner), the clocks started in [from, to) judged at as_of (default now),
        each with the policy version in force when its start was recorded."""
        q = build_query(by=by, from_=from_, to=to, as_of=as_of, known_at=known_at)
        return respond(request, sla_answer(await worker.run(lambda a: a.sla(q)), q), "sla")

    @router.get("/qualification", operation_id="qualification", response_model=None,
                summary="Qualification: MQLs by source", tags=["queries"],
                responses=_ok(QualificationBody, "qualification"))
    async def qualification(request: Request, from_: FromParam = None, to: ToParam = None, as_of: AsOfParam = None,
                            known_at: KnownAtParam = None) -> Response:
        """Per MQL source (scorer, external, override), the MQL entries in [from, to), the distinct leads
        they qualified, how many of those were won at or after one of them, and won / leads."""
        q = build_query(from_=from_, to=to, as_of=as_of, known_at=known_at)
        return respond(request, tidy(await worker.run(lambda a: a.qualification(q))), "qualification")

    @router.get("/plan", operation_id="plan", response_model=None,
                summary="Plan: what a revenue target takes", tags=["queries"],
                responses=_ok(PlanBody, "plan"))
    async def plan_route(request: Request, revenue: RevenueParam, period: PeriodParam, by: LeadsByParam = None,
                         lookback: LookbackParam = DEFAULT_LOOKBACK, as_of: AsOfParam = None,
                         mix: MixParam = None) -> Response:
        """From the leads captured in the lookback window before as_of (default now): per group the win
        rate with its 80 % Wilson interval, revenue per won lead and share, and the deals, leads and
        MQL, SAL and SQL entries the target needs, when to capture the leads, and, with a published
        policy, the SALs needed per working day against the reps' capacity."""
        start, end = parse_period(period)
        q = PlanQuery(revenue=revenue, start=start, end=end, by=by, lookback=lookback,
                      as_of=parse_time(as_of, "as_of"), mix=None if mix is None else parse_mix(mix))
        return respond(request, tidy(await worker.run(lambda a: a.plan(q))), "plan")

    @router.get("/reasons", operation_id="reasons", response_model=None,
                summary="Reasons: why leads were lost, disqualified, recycled or rejected", tags=["queries"],
                responses=_ok(ReasonsBody, "reasons"))
    async def reasons(request: Request, stage: ReasonStageParam, by: ReasonsByParam = None, from_: FromParam = None,
                      to: ToParam = None, as_of: AsOfParam = None, known_at: KnownAtParam = None) -> Response:
        """The reasons given by the events entering `stage` that occurred in [from, to), one per event, counted as
        stored: recycled counts LeadRecycled and LeadRejectedBySales, rejected LeadRejectedBySales alone."""
        q = build_query(stage=stage, by=by, from_=from_, to=to, as_of=as_of, known_at=known_at)
        return respond(request, tidy(await worker.run(lambda a: a.reasons(q))), "reasons")

    @router.get("/pipeline", operation_id="pipeline", response_model=None,
                summary="Pipeline: open leads and their expected value", tags=["queries"],
                responses=_ok(PipelineBody, "pipeline"))
    async def pipeline(request: Request, by: PipelineByParam = "owner", as_of: AsOfParam = None,
                       known_at: KnownAtParam = None) -> Response:
        """Per owner (at as_of), channel or campaign, the leads in mql, sal and sql at as_of, and the sum of
        the expected amounts of those in sql in the reporting currency (amounts without a rate on their SQL
        entry's date listed per currency, never added)."""
        q = build_query(by=by, as_of=as_of, known_at=known_at)
        return respond(request, tidy(await worker.run(lambda a: a.pipeline(q))), "pipeline")

    @router.get("/leads", operation_id="leads", response_model=None,
                summary="Lead list", tags=["queries"],
                responses=_ok(LeadsBody, "leads", links=LEAD_LINKS))
    async def leads(request: Request, stage: StageParam = None,
                    channel: Annotated[str | None, Param(description="Only leads captured on this channel.")] = None,
                    owner: Annotated[str | None, Param(description="Only leads owned by this owner.")] = None,
                    limit: LimitParam = 50,
                    as_of: AsOfParam = None, known_at: KnownAtParam = None, reached: ReachedParam = None,
                    mode: DrillModeParam = None, from_: FromParam = None, to: ToParam = None,
                    by: DrillByParam = None, key: KeyParam = None, after: AfterParam = None) -> Response:
        """Leads with stage, owner, score and source, newest first; with `reached`, the leads one funnel cell
        counts, a page at a time (each with the time of the entry that counted)."""
        q = build_query(stage=stage, channel=channel, owner=owner, limit=limit, as_of=as_of, known_at=known_at,
                        reached=reached, mode=mode or "cohort", from_=from_, to=to, by=by, key=key, after=after)
        body = await worker.run(lambda a: a.leads(q))
        return respond(request, window_answer(body, q) if "reached" in body else leads_answer(body, q), "leads")

    @router.get("/leads/{lead_id}/history", operation_id=HISTORY, response_model=None,
                summary="One lead's history",
                tags=["audit"], responses={**_ok(HistoryBody, "history"),
                                           404: {"model": ErrorBody, "description": "No such lead."}})
    async def history(request: Request, lead_id: LeadIdParam,
                      as_of: AsOfParam = None, known_at: KnownAtParam = None) -> Response:
        """Every event of the lead (CloudEvents envelopes) and its stage at `as_of`. Personal data
        (e-mail, name, phone) reads `[sealed]` unless the server was started with `--personal-data`
        (which requires a bearer token); erased data reads `[erased]`."""
        lead = parse_lead_id(lead_id)
        at, known = parse_time(as_of, "as_of"), parse_time(known_at, "known_at")
        body = await worker.run(lambda a: a.history(lead, at, known))
        if body is None:
            return error(404, f"unknown lead {lead}: no events stored for it")
        return respond(request, body if personal_data else seal_personal(body), "history")

    @router.get("/report", operation_id="report", response_class=HTMLResponse,
                summary="The HTML report", tags=["report"],
                responses={200: {"content": {"text/html": {}}, "description": "One self-contained page."}})
    async def report(from_: FromParam = None, to: ToParam = None, mode: ModeParam = "cohort",
                     model: ModelParam = "linear", conversion: ConversionParam = "won",
                     as_of: AsOfParam = None, known_at: KnownAtParam = None,
                     plan_revenue: Annotated[float | None, Param(
                         gt=0, le=1e12, description="Add a plan section: what this revenue target (reporting "
                         "currency) takes per channel next to the period before; needs plan_period.")] = None,
                     plan_period: Annotated[str | None, Param(
                         description="The plan's period, FROM..TO (as `period` of /plan); needs plan_revenue.",
                         json_schema_extra={"pattern": PERIOD_PATTERN})] = None) -> HTMLResponse:
        """Funnel and its trend, time in stage, attribution by channel, speed to lead by owner, qualification
        and SLAs, with charts (the page `leadledger report --html FILE` writes); with plan_revenue and
        plan_period also the plan per channel."""
        q = build_query(from_=from_, to=to, mode=mode, model=model, conversion=conversion, as_of=as_of,
                        known_at=known_at)
        if (plan_revenue is None) != (plan_period is None):
            raise ParameterError("plan_revenue, plan_period: give both for a plan section, or neither")
        plan = None
        if plan_revenue is not None and plan_period is not None:
            start, end = parse_period(plan_period)
            plan = PlanQuery(revenue=plan_revenue, start=start, end=end)
        return HTMLResponse(await worker.run(lambda a: render_report(a, q, plan=plan)))

    app.include_router(router)
