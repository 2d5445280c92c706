"""The shops the simulator plays: hours, holiday policy, ticket sizes, rushes, regular customers.

A :class:`ShopProfile` is the shop: weekly hours and holiday policy (the same ``[shop.hours]`` the
daemon is configured with, so the generator and the rules agree on when the shop is open), a
log-normal ticket distribution with a heavier upper tail sold at a few list prices (set menus,
cartons of cigarettes), how prices are rounded, when customers come, and how many of them are
regulars whose cards come back day after day. :data:`PROFILES` holds the five the evaluation
reports on; :data:`DEMO_SHOP` is the demo's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from agent.rules.calendar import WEEKDAYS, HoursConfig


@dataclass(frozen=True, slots=True)
class Peak:
    """A rush: arrivals normally distributed around ``hour`` (local) with ``sd_seconds`` spread."""

    hour: float
    sd_seconds: float
    share: float                       # fraction of the day's sales in this rush


@dataclass(frozen=True, slots=True)
class BigTickets:
    """The few big tickets a single log-normal gets wrong: they are sold at a handful of list prices.

    A table books a set menu, a customer buys a carton of one brand, a boutique sells its catalogue:
    the amount is one of ``prices`` (minor units, with their relative popularity), sometimes with a
    few small items rung up on the same bill (drinks with the set menu, a lighter with the carton).
    """

    share: float                                  # of all sales
    prices: tuple[tuple[int, float], ...]         # (list price, weight)
    extras_share: float = 0.0                     # bills with something added to the list price
    extras_median_minor: int = 0
    extras_sigma: float = 0.5


@dataclass(frozen=True, slots=True)
class GroupOrders:
    """Genuine large bills for many people: a banquet (per-head price x party size), an office's order.

    The amount is ``unit`` x ``size`` exactly (plus extras on some bills), so it is often an exact
    multiple of an ordinary amount: ten cups at RMB 25.00 is RMB 250.00. They come at their own hours
    (``peaks``, +-45 min), more on weekends (``weekend_boost``), and many are paid by a company's card
    (``company_cards`` of them, ``company_share`` of group bills), which comes back month after month.
    """

    share: float                                  # of all sales on a workday
    units: tuple[tuple[int, float], ...]          # (per-head or per-item price, weight)
    sizes: tuple[tuple[int, float], ...]          # (people or items, weight)
    peaks: tuple[float, ...]                      # local hours they cluster around
    weekend_boost: float = 1.0
    extras_share: float = 0.0                     # bills with drinks etc. on top
    extras_median_minor: int = 0
    company_cards: int = 0
    company_share: float = 0.0


@dataclass(frozen=True, slots=True)
class TillSide:
    """A shop whose till is tapped too (issue 17): how its sales are paid and when the 小票 prints.

    The till prints every sale (its order); the terminal charges the card and QR tenders. On an
    integrated (ECR) sale the till sends the amount, so the charge cannot be mistyped and the receipt
    prints after the approval; on a standalone sale the cashier keys the amount and prints the receipt
    before or after charging.
    """

    card_share: float = 0.40           # paid by card alone
    qr_share: float = 0.40             # by a wallet's QR code (微信 / 支付宝) on the terminal
    split_share: float = 0.06          # in two parts (card + cash, card + QR, QR + cash)
    # the rest is cash
    integrated_share: float = 0.6      # electronic sales whose amount the till sent to the terminal
    receipt_before_share: float = 0.5  # standalone sales whose receipt prints before the charge


def _every_day(*ranges: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(ranges) for _ in WEEKDAYS)


@dataclass(frozen=True, slots=True)
class ShopProfile:
    name: str = "demo"
    title: str = "好味道餐饮 静安店"
    terminal_id: str = "15221155"
    merchant_id: str = "104152253311021"
    batch_no: str | None = "000128"    # None: one batch per day, numbered yymmdd
    currency: str = "CNY"
    # Weekly hours in WEEKDAYS order, as [shop.hours] ranges; () is a closed day.
    hours: tuple[tuple[str, ...], ...] = _every_day("09:00-21:30")
    holidays: str = "none"             # "cn" | "none", as [shop.hours] holidays
    closed_on_holidays: bool = False
    makeup_workday_hours: str | None = None
    median_minor: int = 6800           # RMB 68.00 typical ticket
    sigma: float = 0.75                # log-normal spread of ln(amount)
    tail: BigTickets | None = None
    # Price rounding: (step in minor units, probability). Tills ring up whole yuan or ten-fen steps far more
    # than odd fen.
    price_steps: tuple[tuple[int, float], ...] = ((100, 0.6), (10, 0.4))
    peaks: tuple[Peak, ...] = (Peak(12.5, 2400, 0.35), Peak(18.75, 3000, 0.40))
    # Share of sales rung up just after closing (the last table pays late): inside the TIME-001 grace.
    late_share: float = 0.0
    regulars: int = 0                  # returning customers whose cards recur across days
    regular_share: float = 0.0
    day_reuse: float = 0.35            # chance a sale reuses a card already seen today
    decline_rate: float = 0.0          # declined (wrong PIN, no funds); most retry on the same card
    void_rate: float = 0.0             # rung wrong, voided, rung again
    refund_rate: float = 0.0           # a customer brings something back (refund of today's sale)
    per_day: int = 300                 # a typical day's sales (history)
    operators: tuple[str, ...] = ("01", "02", "03")
    bins: tuple[str, ...] = ("622576", "621700", "622848", "436742", "625807", "524047")
    till: TillSide | None = None       # the till's printer (or JSON line) is tapped too: both wires
    groups: GroupOrders | None = None  # banquets, office orders: genuine large bills, often exact multiples
    # A menu of item prices (price, weight): an ordinary ticket is 1..len(basket) items from it (round-number
    # pricing) instead of a log-normal amount; basket = weights of 1, 2, 3 ... items.
    menu: tuple[tuple[int, float], ...] = ()
    basket: tuple[float, ...] = (1.0,)
    # Prices rise by this factor on the day the evaluation names (mid-month in the history): list prices,
    # menu items, group units and the ticket median, each rounded to the yuan.
    price_rise: float = 1.0

    def hours_config(self, closures: tuple[date, ...] = ()) -> HoursConfig:
        return HoursConfig.model_validate({
            **{d: list(r) if r else "closed" for d, r in zip(WEEKDAYS, self.hours, strict=True)},
            "holidays": self.holidays, "closed_on_holidays": self.closed_on_holidays,
            "closures": [c.isoformat() for c in closures],
            "makeup_workday_hours": self.makeup_workday_hours,
        })

    def hours_toml(self, closures: tuple[date, ...] = ()) -> str:
        """The ``[shop.hours]`` section that configures the daemon for this shop."""
        lines = ["[shop.hours]"]
        for d, r in zip(WEEKDAYS, self.hours, strict=True):
            lines.append(f"{d} = " + ("\"closed\"" if not r else "[" + ", ".join(f'"{x}"' for x in r) + "]"))
        lines.append(f"holidays = \"{self.holidays}\"")
        lines.append(f"closed_on_holidays = {'true' if self.closed_on_holidays else 'false'}")
        lines.append("closures = [" + ", ".join(f'"{c.isoformat()}"' for c in closures) + "]")
        if self.makeup_workday_hours:
            lines.append(f"makeup_workday_hours = \"{self.makeup_workday_hours}\"")
        return "\n".join(lines) + "\n"


DEMO_SHOP = ShopProfile()

_WEEKDAY_LUNCH_DINNER = ("10:30-14:00", "17:00-21:30")

# An office-district restaurant: lunch and dinner on workdays, shut at weekends and on public holidays,
# open on make-up workdays (调休) with Monday's hours. Bills are rounded to the yuan (抹零).
RESTAURANT = ShopProfile(
    name="restaurant", title="好味道餐饮 陆家嘴店", terminal_id="15221155", merchant_id="104152253311021",
    batch_no=None,
    hours=(*(_WEEKDAY_LUNCH_DINNER,) * 5, (), ()),
    holidays="cn", closed_on_holidays=True, makeup_workday_hours="mon",
    median_minor=9800, sigma=0.45,
    # Banquet set menus per table (宴会套餐); drinks are often extra (酒水另计).
    tail=BigTickets(0.02, ((58800, 0.30), (68800, 0.35), (88800, 0.25), (128800, 0.10)),
                    extras_share=0.45, extras_median_minor=12000, extras_sigma=0.6),
    price_steps=((100, 0.85), (10, 0.15)),
    peaks=(Peak(12.25, 1800, 0.50), Peak(18.75, 2700, 0.40)),
    late_share=0.02, regulars=400, regular_share=0.35, day_reuse=0.01,
    decline_rate=0.015, void_rate=0.004, refund_rate=0.0, per_day=250,
    operators=("01", "02", "03", "04"),
)

# A convenience store open every day from early to late: many small baskets, a few cartons of cigarettes.
CONVENIENCE = ShopProfile(
    name="convenience", title="快客便利 南京西路店", terminal_id="30481187", merchant_id="898310058120041",
    batch_no=None,
    hours=_every_day("07:00-23:30"),
    holidays="cn", closed_on_holidays=False,
    median_minor=2200, sigma=0.75,
    # Cartons of cigarettes at their list prices, now and then with a drink or a lighter.
    tail=BigTickets(0.03, ((18000, 0.15), (23000, 0.25), (26000, 0.25), (30000, 0.15), (45000, 0.15),
                           (65000, 0.05)),
                    extras_share=0.15, extras_median_minor=600, extras_sigma=0.6),
    price_steps=((10, 0.55), (100, 0.30), (1, 0.15)),
    peaks=(Peak(8.25, 2400, 0.25), Peak(12.5, 2400, 0.20), Peak(18.5, 3600, 0.25)),
    late_share=0.01, regulars=300, regular_share=0.45, day_reuse=0.05,
    decline_rate=0.02, void_rate=0.003, refund_rate=0.002, per_day=500,
    operators=("11", "12"),
)

# A boutique with high tickets: few sales, whole-yuan prices, open every day, busiest on holidays.
BOUTIQUE = ShopProfile(
    name="boutique", title="衣尚精品 静安嘉里店", terminal_id="52017734", merchant_id="104310053990218",
    batch_no=None,
    hours=_every_day("10:00-22:00"),
    holidays="cn", closed_on_holidays=False,
    median_minor=128000, sigma=0.5,
    # Coats and bags from the catalogue; sometimes a scarf or a belt goes on the same bill.
    tail=BigTickets(0.04, ((388000, 0.25), (428000, 0.25), (498000, 0.20), (588000, 0.15), (688000, 0.10),
                           (880000, 0.05)),
                    extras_share=0.10, extras_median_minor=38000, extras_sigma=0.4),
    price_steps=((10000, 0.35), (100, 0.65)),
    peaks=(Peak(15.0, 5400, 0.40), Peak(19.5, 3600, 0.35)),
    late_share=0.02, regulars=150, regular_share=0.2, day_reuse=0.01,
    decline_rate=0.03, void_rate=0.004, refund_rate=0.004, per_day=40,
    operators=("A1", "A2"),
)

# A Cantonese restaurant (酒楼) with a heavy tail of genuine large bills: banquets and group dinners at
# per-head set prices for 6-20 people, mostly at dinner and at weekends, many on company cards; the
# ordinary bills are whole yuan. Prices rose 8% in the middle of the history month.
BANQUET = ShopProfile(
    name="banquet", title="粤海酒楼 徐汇店", terminal_id="40017721", merchant_id="104310058800317",
    batch_no=None,
    hours=_every_day("11:00-14:00", "17:00-22:00"),
    holidays="cn", closed_on_holidays=False,
    median_minor=16800, sigma=0.55,
    price_steps=((100, 0.9), (1000, 0.1)),
    peaks=(Peak(12.5, 2400, 0.40), Peak(19.0, 3000, 0.45)),
    groups=GroupOrders(0.06, ((8800, 0.20), (12800, 0.30), (16800, 0.25), (19800, 0.15), (23800, 0.10)),
                       ((6, 0.15), (8, 0.20), (10, 0.30), (12, 0.20), (15, 0.10), (20, 0.05)),
                       peaks=(12.5, 19.0, 19.5), weekend_boost=2.0, extras_share=0.5, extras_median_minor=30000,
                       company_cards=40, company_share=0.4),
    price_rise=1.08,
    late_share=0.02, regulars=300, regular_share=0.25, day_reuse=0.01,
    decline_rate=0.015, void_rate=0.004, refund_rate=0.0, per_day=200,
    operators=("01", "02", "03"),
)

# A bakery and tea shop (烘焙茶饮) with round-number prices (whole yuan, mostly multiples of RMB 1 and 5)
# whose genuine large bills are offices ordering ten, twenty or fifty of one item: exact multiples of its
# most common amounts, paid on a handful of company cards on workday mornings and afternoons. Prices rose
# 10% mid-month.
BAKERY = ShopProfile(
    name="bakery", title="麦香烘焙 张江店", terminal_id="52203318", merchant_id="898310058150092",
    batch_no=None,
    hours=_every_day("07:30-21:00"),
    holidays="cn", closed_on_holidays=False,
    menu=((800, 0.10), (1200, 0.15), (1500, 0.20), (1800, 0.15), (2200, 0.12), (2500, 0.15), (2800, 0.08),
          (3500, 0.05)),
    basket=(0.55, 0.30, 0.10, 0.05),
    peaks=(Peak(8.25, 2400, 0.30), Peak(12.5, 2400, 0.20), Peak(17.5, 3600, 0.25)),
    groups=GroupOrders(0.012, ((1200, 0.2), (1500, 0.3), (1800, 0.2), (2500, 0.3)),
                       ((10, 0.45), (12, 0.10), (15, 0.10), (20, 0.20), (30, 0.10), (50, 0.05)),
                       peaks=(10.0, 15.0), weekend_boost=0.3, company_cards=12, company_share=0.8),
    price_rise=1.10,
    late_share=0.01, regulars=400, regular_share=0.5, day_reuse=0.03,
    decline_rate=0.01, void_rate=0.003, refund_rate=0.002, per_day=300,
    operators=("01", "02"),
)

PROFILES: dict[str, ShopProfile] = {p.name: p for p in (RESTAURANT, CONVENIENCE, BOUTIQUE, BANQUET, BAKERY)}

# Both wires (issue 17): a café-restaurant whose till prints a 小票 for every sale and whose terminal is
# on an ECR link for most card and QR sales; the cashier keys the rest on the terminal by hand. Tickets
# like the restaurant's (RMB 68 typical, set menus for groups), open every day, cash still taken.
CAFE = ShopProfile(
    name="cafe", title="港式茶餐厅 徐家汇店", terminal_id="31009921", merchant_id="898310058130077",
    batch_no=None,
    hours=_every_day("08:00-22:00"),
    holidays="cn", closed_on_holidays=False,
    median_minor=6800, sigma=0.55,
    tail=BigTickets(0.02, ((38800, 0.40), (58800, 0.35), (88800, 0.25)),
                    extras_share=0.40, extras_median_minor=8000, extras_sigma=0.6),
    price_steps=((100, 0.70), (10, 0.30)),
    peaks=(Peak(9.0, 1500, 0.15), Peak(12.25, 2400, 0.35), Peak(18.75, 3000, 0.30)),
    late_share=0.01, regulars=300, regular_share=0.3, day_reuse=0.02,
    decline_rate=0.015, void_rate=0.004, refund_rate=0.0, per_day=300,
    operators=("01", "02", "03"),
    till=TillSide(),
)

# Shops whose till is tapped as well as the terminal (evaluated with and without the till side).
TILL_PROFILES: dict[str, ShopProfile] = {CAFE.name: CAFE}
